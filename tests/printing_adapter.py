"""An adapter that prints when imported, as careless user code does."""
import sys

from snakepit_bridge import command

# No newline: whatever comes next on the same stream joins this line, so a
# ready line written after it would no longer start the line.
sys.stdout.write("loading model... ")
print("hello from an adapter at import time")


@command("shout_stdio")
def shout_stdio(args):
    print("and from a handler")
    return {"text": str(args.get("text", "")).upper()}
