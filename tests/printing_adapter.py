"""An adapter that prints when imported, as careless user code does."""
from snakepit_bridge import command

print("hello from an adapter at import time")


@command("shout_stdio")
def shout_stdio(args):
    print("and from a handler")
    return {"text": str(args.get("text", "")).upper()}
