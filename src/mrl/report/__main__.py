"""`python -m mrl.report`: the command line of `mrl.report.build`."""

from mrl.report.build import main

if __name__ == "__main__":
    main()
