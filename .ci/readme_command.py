"""Print the N-th command of the first code block under the README's Quickstart heading."""

import re
import sys
from pathlib import Path

text = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
match = re.search(
    r"^#+[^\n]*quick ?start[^\n]*\n(.*?)^```[a-z]*\n(.*?)^```", text, re.I | re.M | re.S
)
if not match:
    sys.exit("README.md has no Quickstart code block")
commands, current = [], ""
for line in match.group(2).splitlines():
    if not line.strip() or line.lstrip().startswith("#"):
        continue
    current += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
    if not line.rstrip().endswith("\\"):
        commands.append(current.strip())
        current = ""
print(commands[int(sys.argv[1]) - 1])
