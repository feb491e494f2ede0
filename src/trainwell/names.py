"""Names that become folder names: a class is one visible path component, in one spelling."""

from __future__ import annotations

import unicodedata
from collections import Counter

# What a class name may not be or hold, for messages.
FOLDER_NAME_RULE = "one folder name below data.dir: not empty, '.' or '..', with no '/' or '\\' and not hidden " \
                   "(starting with '.')"


def is_folder_name(name: str) -> bool:
    """True when name is one visible path component: not empty, not '.' or '..', no '/', '\\' or NUL, no leading dot.

    `..`, `/etc` or `a/b` as a class made the audit read files outside the dataset; a backslash
    separates folders on Windows; a hidden name (`.git`) is never a class."""
    return bool(name) and not name.startswith(".") and not any(character in name for character in "/\\\0")


def same_after_normalisation(names: list[str]) -> list[str]:
    """The names that differ from another one only before Unicode normalisation (NFC), sorted:
    `café` with a composed é and with e + a combining accent look identical but are two strings
    (two classes, or one folder on a file system that normalises names)."""
    spellings: dict[str, set[str]] = {}
    for name in names:
        spellings.setdefault(unicodedata.normalize("NFC", name), set()).add(name)
    return sorted(name for group in spellings.values() if len(group) > 1 for name in group)


def class_list_problem(names: list[str]) -> str | None:
    """Why a class list from params cannot name class folders, or None when it can."""
    not_components = [name for name in names if not is_folder_name(name)]
    if not_components:
        return f"lists {', '.join(map(ascii, not_components))[:300]}: a class name is {FOLDER_NAME_RULE}"
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        return f"lists {repeated!r:.300} more than once; name each class once"
    alike = same_after_normalisation(names)
    if alike:
        return (f"lists {', '.join(map(ascii, alike))[:300]}, the same name after Unicode normalisation (NFC) in "
                "different characters: they look identical; name each class once, in one spelling")
    return None
