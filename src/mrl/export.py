"""`python -m mrl.export` runs `mrl.artifacts.export`'s command line (as documented)."""

from mrl.artifacts.export import main

if __name__ == "__main__":
    main()
