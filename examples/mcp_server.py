"""An MCP server whose tools an agent can use, written with the `mcp` SDK (shaped like its
quickstart). Give its tools to an agent with `--mcp` (needs `pip install 'agentflow-dag[mcp]'`):

    agentflow tools list --mcp "python examples/mcp_server.py"
    agentflow ask --planner dag --mcp "python examples/mcp_server.py" \\
        "Which has more people, France or Germany?"

or in Python: `Agent(..., tools=[MCPServer.stdio("python", ["examples/mcp_server.py"])])`.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

POPULATION_MILLIONS = {"france": 68.4, "germany": 84.5, "spain": 48.6, "italy": 58.9}

# Create an MCP server
mcp = MCPServer("Countries")


# Add a look-up tool: a planner sends its look-ups to a tool whose name says "search"
@mcp.tool()
def search_countries(query: str) -> str:
    """Search a table of European countries for the population of the one named."""
    for country, millions in POPULATION_MILLIONS.items():
        if country in query.lower():
            return f"{country.title()}: {millions} million people"
    return f"no country found in {query!r}; known: {', '.join(POPULATION_MILLIONS)}"


# Add an addition tool
@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers"""
    return a + b


def main() -> None:
    mcp.run()  # stdio: the agent starts this script and talks to it over stdin/stdout


if __name__ == "__main__":
    main()
