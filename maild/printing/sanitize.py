"""The only nh3 importer: a letter's HTML made safe to show and print.

What survives is text, structure and simple inline formatting. Scripts, event handlers,
forms, frames, embedded objects, style sheets and every URL that would be fetched go:
images keep only ``data:`` sources, links only http(s) and mailto targets, and a ``style``
attribute keeps a few harmless properties and is dropped whole if it could name a URL.
"""

from __future__ import annotations

import nh3

_TAGS = (set(nh3.ALLOWED_TAGS) - {"area", "map"}) | {"font"}

# Removed with everything inside them, not just unwrapped.
_DROP_WITH_CONTENT = {
    "script",
    "style",
    "title",
    "template",
    "noscript",
    "iframe",
    "frame",
    "frameset",
    "object",
    "applet",
    "svg",
    "math",
    "select",
    "textarea",
}

_TABLE_CELL = {"align", "valign", "bgcolor", "colspan", "rowspan", "width"}
_ATTRIBUTES = {
    "*": {"style", "dir", "lang", "title", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
    "table": {"align", "bgcolor", "border", "cellpadding", "cellspacing", "width"},
    "tr": {"align", "valign", "bgcolor"},
    "td": _TABLE_CELL,
    "th": _TABLE_CELL,
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "ol": {"start", "type"},
    "ul": {"type"},
    "li": {"value"},
    "blockquote": {"cite"},
    "time": {"datetime"},
}

_STYLE_PROPERTIES = {
    "color",
    "background-color",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "text-align",
    "text-decoration",
    "text-transform",
    "text-indent",
    "line-height",
    "letter-spacing",
    "vertical-align",
    "white-space",
    "direction",
    "list-style-type",
    "border-collapse",
    *(
        f"{box}{side}"
        for box in ("margin", "padding")
        for side in ("", "-top", "-right", "-bottom", "-left")
    ),
    *(
        f"border{side}{part}"
        for side in ("", "-top", "-right", "-bottom", "-left")
        for part in ("", "-color", "-style", "-width")
    ),
}

# Anything in a style value that could fetch or compute: url(), image-set(), escapes hiding them.
_STYLE_SUSPECT = ("url", "image", "\\", "expression", "@", "attr(", "var(", "&")

_LINK_SCHEMES = ("http://", "https://", "mailto:")
_IMAGE_DATA = ("data:image/png", "data:image/jpeg", "data:image/gif", "data:image/webp")


def _attribute(tag: str, name: str, value: str) -> str | None:
    """Keep an attribute only when it cannot make the reader fetch anything."""
    lowered = value.strip().lower()
    if name == "src":
        return value if tag == "img" and lowered.startswith(_IMAGE_DATA) else None
    if name == "href":
        return value if lowered.startswith(_LINK_SCHEMES) else None
    if name == "style" and any(part in lowered for part in _STYLE_SUSPECT):
        return None
    return value


_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags=_DROP_WITH_CONTENT,
    attributes=_ATTRIBUTES,
    attribute_filter=_attribute,
    strip_comments=True,
    link_rel="noopener noreferrer",
    url_schemes={"http", "https", "mailto", "data"},
    url_relative="deny",
    filter_style_properties=_STYLE_PROPERTIES,
)


def clean_html(html: str) -> str:
    """Give the letter's HTML as a safe, well-formed fragment to place inside a page."""
    return _CLEANER.clean(html)
