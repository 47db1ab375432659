#!/usr/bin/env python3
"""check_docs.py CONFIG_C GATEWAY_FILE_MD - every member the gateway-file
parser accepts is documented.

The members are the strings of the NULL-terminated `*_fields[]` arrays of
lib/config.c (each lists what one JSON object may hold).  Each must appear in
docs/gateway-file.md as `name`, in backticks.  Exit 0 when all do, 1 with
the missing ones (and the array each comes from) otherwise.  Standard library
only."""
import re
import sys

ARRAY = re.compile(r"static\s+const\s+char\s*\*\s*const\s+(\w+_fields)\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;",
                   re.S)
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def members(c_text):
    """{array name: [member, ...]} from the C source."""
    # comments out, so that a quoted word in one is not taken for a member
    text = re.sub(r"/\*.*?\*/", " ", c_text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return {m.group(1): STRING.findall(m.group(2)) for m in ARRAY.finditer(text)}


def main(argv):
    if len(argv) != 3:
        print("usage: check_docs.py lib/config.c docs/gateway-file.md", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        arrays = members(f.read())
    with open(argv[2], encoding="utf-8") as f:
        doc = f.read()
    # a guard against this script going blind (the arrays renamed or reshaped)
    if len(arrays) < 10 or "top_fields" not in arrays or "gateway_fields" not in arrays:
        print("check_docs.py: found only %d *_fields[] arrays in %s (%s); has their form "
              "changed?" % (len(arrays), argv[1], ", ".join(sorted(arrays)) or "none"),
              file=sys.stderr)
        return 1
    documented = set(re.findall(r"`([^`\n]+)`", doc))
    missing = [(name, array) for array, names in sorted(arrays.items()) for name in names
               if name not in documented]
    total = sum(len(v) for v in arrays.values())
    if missing:
        print("%s does not mention these gateway-file members (as `name`):" % argv[2])
        for name, array in missing:
            print("  %-24s from %s[]" % (name, array))
        return 1
    print("%d members from %d *_fields[] arrays, each mentioned in %s"
          % (total, len(arrays), argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
