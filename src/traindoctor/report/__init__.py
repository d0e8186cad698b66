"""Reports render a Diagnosis; they decide nothing."""
from .jsonout import to_json_text, write_json
from .terminal import render, render_explain

__all__ = ["render", "render_explain", "to_json_text", "write_json"]
