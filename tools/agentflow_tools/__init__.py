"""The tools shipped with agentflow: local and web search, page fetch, Python, a calculator.

Tools whose libraries are optional (fetch needs the `fetch` extra) are imported from their
modules, not here, so that `import agentflow_tools` never needs them.
"""

from agentflow_tools.calculator import calculator
from agentflow_tools.python_exec import run_python
from agentflow_tools.search import LocalIndex, SearchHit, make_search_tool

__all__ = ["LocalIndex", "SearchHit", "calculator", "make_search_tool", "run_python"]
