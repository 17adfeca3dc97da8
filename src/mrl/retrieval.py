"""`python -m mrl.retrieval` runs `mrl.tools.retrieval`'s command line (as documented)."""

from mrl.tools.retrieval import main

if __name__ == "__main__":
    main()
