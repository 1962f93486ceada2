"""The Gradio app's pieces: configuration, the model manager, input parsing, outputs, one module per tab, and the
page layout (``build_demo``). ``app.py`` parses the command line and launches what ``build_demo`` returns."""

from ui.config import AppConfig
from ui.layout import build_demo
from ui.models import ModelManager

__all__ = ["AppConfig", "ModelManager", "build_demo"]
