"""`python -m mrl.mteb` runs `mrl.tools.mteb_bridge`'s command line (as documented)."""

from mrl.tools.mteb_bridge import main

if __name__ == "__main__":
    main()
