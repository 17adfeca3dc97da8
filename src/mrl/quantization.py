"""`python -m mrl.quantization` runs `mrl.tools.quantization`'s command line (as documented)."""

from mrl.tools.quantization import main

if __name__ == "__main__":
    main()
