"""Schemathesis hooks for inlet's admin API (loaded by scripts/api-fuzz.sh).

The document marks glob lists `format: glob`: globset's syntax (braces, classes, ranges) is not a
regular language a `pattern` could state. This strategy generates valid globs of every kind the
README describes, so positive tests exercise them; everything else comes from the document.
"""

import schemathesis
from hypothesis import strategies as st

_name = st.from_regex(r"\A[a-z0-9_.-]{1,12}\Z")
_segment = st.one_of(
    _name,
    st.just("*"),
    st.just("**"),
    st.just("?"),
    st.builds(lambda a, b: "{%s,%s}" % (a, b), _name, _name),
    st.builds(lambda n: n + "[abc]", _name),
    st.builds(lambda n: "[0-9]" + n, _name),
    st.builds(lambda n: n + "*.tf", _name),
)
_glob = st.builds(
    lambda negate, parts: ("!" if negate else "") + "/".join(parts),
    st.booleans(),
    st.lists(_segment, min_size=1, max_size=4),
)

schemathesis.openapi.format("glob", _glob)
