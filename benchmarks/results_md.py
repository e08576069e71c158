"""Write one named section of benchmarks/RESULTS.md, leaving the rest as it is."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- begin: name -->`` and ``<!-- end: name -->``.

    The section is appended when it does not exist yet; the file is written
    to a temporary name and renamed.
    """
    begin, end = f"<!-- begin: {name} -->", f"<!-- end: {name} -->"
    section = f"{begin}\n\n{body.strip()}\n\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# fibrecon performance record\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = RESULTS.with_suffix(".md.part")
    tmp.write_text(text)
    tmp.replace(RESULTS)
