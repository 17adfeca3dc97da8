"""`python -m mrl.demo` runs `mrl.tools.demo`'s command line (as documented)."""

from mrl.tools.demo import main

if __name__ == "__main__":
    main()
