"""secret_scan.py - the one check of the Python tests that no secret shows:
no secret, nor any 8-byte window of one, in a text the tests captured
(stdout, stderr, an answer, a log line, a Redis value).  Used by
test_secrets.py, test_serve.py, test_cli.py and test_examples.py.

(Not named secrets.py: tests/support is first on sys.path, and that would
shadow the standard library's `secrets` module.)

A secret shorter than a window is looked for whole.  Secrets and texts may
be str (UTF-8) or bytes.  Python 3 standard library only.
"""
import os

WINDOW = 8


def as_bytes(x):
    if isinstance(x, bytes):
        return x
    if isinstance(x, bytearray):
        return bytes(x)
    return x.encode("utf-8", "surrogateescape")


def windows(secret, n=WINDOW):
    """Every n-byte window of a secret (the secret itself when shorter)."""
    s = as_bytes(secret)
    if len(s) <= n:
        return {s} if s else set()
    return {s[i:i + n] for i in range(len(s) - n + 1)}


class Scanner:
    """Every window of every secret, indexed, so that a text is scanned in
    one pass however many secrets and windows there are."""

    def __init__(self, secrets, n=WINDOW):
        """secrets: a list of values, or a dict label -> value (the label
        names the secret in a failure message instead of the value)."""
        self.n = n
        items = secrets.items() if isinstance(secrets, dict) else \
            [("secret #%d" % i, v) for i, v in enumerate(secrets)]
        self.index = {}  # window -> label of a secret holding it
        self.lengths = set()
        self.count = 0
        for label, value in items:
            for w in windows(value, n):
                self.index.setdefault(w, label)
                self.lengths.add(len(w))
            self.count += 1

    @property
    def windows(self):
        return len(self.index)

    def find(self, text):
        """[(label, window, offset)] of each window found in text, at most one
        hit per window."""
        data = as_bytes(text)
        hits, seen = [], set()
        for m in self.lengths:
            for i in range(len(data) - m + 1):
                w = data[i:i + m]
                if w in self.index and w not in seen:
                    seen.add(w)
                    hits.append((self.index[w], w, i))
        return hits

    def describe(self, text, hits, where, limit=3):
        data = as_bytes(text)
        out = []
        for label, w, i in hits[:limit]:
            ctx = data[max(0, i - 60):i + len(w) + 60]
            out.append("%s holds %r (a window of %s) at offset %d: ...%r..." % (
                where, w, label, i, ctx))
        if len(hits) > limit:
            out.append("(and %d more windows)" % (len(hits) - limit))
        return "\n".join(out)

    def assert_clean(self, testcase, text, where="the output"):
        hits = self.find(text)
        if hits:
            testcase.fail(self.describe(text, hits, where))


def assert_no_secret(testcase, text, secrets, where="the output"):
    """Fails testcase when text holds a secret or a window of one."""
    Scanner(secrets).assert_clean(testcase, text, where)


def make_secret(label, groups=6):
    """A fresh secret: "<label>-" and `groups` groups of 6 random hex digits,
    joined by '-'.  Each 8-byte window past the label holds a '-' and at
    least six random digits, so no id, hash, path or request id the tests
    meet can hold one by chance; the label names it in failures (give each
    secret a label no other text of the test holds)."""
    return label + "-" + "-".join(os.urandom(3).hex() for _ in range(groups))


def collisions(secrets, texts, n=WINDOW):
    """The windows of the secrets that already occur in texts that are not
    secret (temporary paths, file and variable names, ids): a scan for them
    would fail for nothing.  [(label, window)]."""
    sc = Scanner(secrets, n)
    out = []
    for t in texts:
        out.extend((label, w) for label, w, _ in sc.find(t))
    return out
