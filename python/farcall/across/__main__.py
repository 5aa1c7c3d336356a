"""``python -m farcall.across``: serves one connection over stdin and
stdout until the other side closes it."""

from farcall.across import serve_stdio

if __name__ == "__main__":
    serve_stdio()
