"""`python -m mrl.mine` runs `mrl.tools.mine`'s command line (as documented)."""

from mrl.tools.mine import main

if __name__ == "__main__":
    main()
