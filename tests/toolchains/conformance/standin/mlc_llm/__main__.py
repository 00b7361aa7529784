"""TEST ONLY: the current-generation `mlc_llm` entry point."""

import sys


def main() -> int:
    print("mlc_llm conformance stand-in", sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
