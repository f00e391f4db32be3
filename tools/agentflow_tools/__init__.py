"""The tools shipped with agentflow: local and web search, page fetch, Python, a calculator,
and `MCPServer`, whose tools come from an MCP server.

Tools whose libraries are optional (fetch needs the `fetch` extra) are imported from their
modules, not here, so that `import agentflow_tools` never needs them (`MCPServer` imports the
`mcp` package only when a session opens).
"""

from agentflow_tools.calculator import calculator
from agentflow_tools.mcp_client import MCPServer
from agentflow_tools.python_exec import run_python
from agentflow_tools.search import LocalIndex, SearchHit, make_search_tool

__all__ = ["LocalIndex", "MCPServer", "SearchHit", "calculator", "make_search_tool", "run_python"]
