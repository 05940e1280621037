"""Status icons for HTML pages as inline SVG, so they render without an emoji font.

Each state gets a shape *and* a colour (a colour-blind reader tells them apart by shape):

===========  ================  ==========================================
shape        states            drawing
===========  ================  ==========================================
``ok``       success           green disc with a white check mark
``fail``     failed, timeout,  red disc with a white cross
             oom, crashed
``play``     running           blue triangle pointing right
``stop``     interrupted       amber square
``wait``     never             grey hourglass
``off``      disabled          grey circle with a slash
===========  ================  ==========================================

Findings (what a notebook reported, :class:`jupycron.models.FindingLevel`) have their own
shapes: ``ok`` (the green check, as above), ``warn`` (amber triangle with a bar),
``alarm`` (red octagon with a bar) and ``nodata`` (grey dashed circle with a question
mark); :func:`finding_icon` draws them. The mappings from state and level to shape live in
:mod:`jupycron.status` (``NotebookState.shape``, ``FINDING_SHAPES``).

:func:`status_icon` returns the ``<svg>`` element (14 × 14 px, ``role="img"`` with the state
as its accessible name); pages put the state word beside it. :func:`glyph` draws the same
shapes (and a ``pencil``) as decoration for buttons and links, hidden from screen readers. Text outputs (``jupycron
list``) show the state words alone.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from .models import FindingLevel
from .status import FINDING_SHAPES, NotebookState

__all__ = ["GLYPHS", "SHAPES", "finding_icon", "glyph", "status_icon"]

SHAPES = {
    "ok": '<circle cx="8" cy="8" r="7.5" fill="#1a7f37"/>'
          '<path d="M4.3 8.3l2.5 2.5 4.9-5.1" fill="none" stroke="#fff" stroke-width="2"/>',
    "fail": '<circle cx="8" cy="8" r="7.5" fill="#cf222e"/>'
            '<path d="M5.2 5.2l5.6 5.6M10.8 5.2l-5.6 5.6" stroke="#fff" stroke-width="2"/>',
    "play": '<path d="M3 1.5l11 6.5-11 6.5z" fill="#0969da"/>',
    "stop": '<rect x="1.5" y="1.5" width="13" height="13" rx="2" fill="#bf8700"/>',
    "wait": '<path d="M3.5 1.5h9M3.5 14.5h9M4.5 1.5L8 8l-3.5 6.5M11.5 1.5L8 8l3.5 6.5" '
            'fill="none" stroke="#57606a" stroke-width="1.5" stroke-linejoin="round"/>'
            '<path d="M5.7 13.5L8 9.5l2.3 4z" fill="#57606a"/>',
    "off": '<circle cx="8" cy="8" r="6.5" fill="none" stroke="#6e7781" stroke-width="2"/>'
           '<path d="M3.4 12.6l9.2-9.2" stroke="#6e7781" stroke-width="2"/>',
    "warn": '<path d="M8 1L15.5 14.5H0.5z" fill="#bf8700"/>'
            '<path d="M8 5.5v4.5M8 11.5v1.5" stroke="#fff" stroke-width="1.8"/>',
    "alarm": '<path d="M5.1 0.5h5.8l4.1 4.1v5.8l-4.1 4.1H5.1L1 10.4V4.6z" fill="#cf222e"/>'
             '<path d="M8 3.5v5.5M8 10.8v1.8" stroke="#fff" stroke-width="2"/>',
    "nodata": '<circle cx="8" cy="8" r="6.5" fill="none" stroke="#6e7781" stroke-width="1.6" '
              'stroke-dasharray="2.5 1.6"/>'
              '<path d="M6 6.2a2 2 0 1 1 2.6 1.9c-.4.2-.6.5-.6.9v.8M8 11.2v1.2" fill="none" '
              'stroke="#6e7781" stroke-width="1.5"/>',
}

GLYPHS = {
    **SHAPES,
    "pencil": '<path d="M2 11.5V14h2.5l7.4-7.4-2.5-2.5zM13.7 4.8a.7.7 0 000-1l-1.5-1.5a.7.7 0 00-1 0'
              'L10 3.5 12.5 6z" fill="currentColor"/>',
}


def _svg(name: str, css: str, attrs: str) -> Markup:
    return Markup(f'<svg class="{css}" data-shape="{name}" width="14" height="14" '
                  f'viewBox="0 0 16 16" {attrs} focusable="false">{GLYPHS[name]}</svg>')


def glyph(name: str) -> Markup:
    """A decorative ``<svg class="glyph">`` (``aria-hidden``) of :data:`GLYPHS` ``name``."""
    return _svg(name, f"glyph shape-{name}", 'aria-hidden="true"')


def status_icon(state: str) -> Markup:
    """The inline ``<svg class="status-icon ...">`` for ``state`` (a row or run state).

    Raises ValueError for an unknown state, so a new state cannot silently render blank.
    """
    shape = NotebookState(state).shape
    return _svg(shape, f"status-icon shape-{shape}", f'role="img" aria-label="{escape(state)}"')


def finding_icon(level: str) -> Markup:
    """The inline ``<svg class="finding-icon ...">`` for a finding ``level``; ValueError
    for an unknown level."""
    lvl = FindingLevel(level)
    shape = FINDING_SHAPES[lvl]
    return _svg(shape, f"finding-icon shape-{shape}",
                f'role="img" aria-label="{escape(str(lvl).replace("_", " "))}"')
