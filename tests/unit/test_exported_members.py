import agentflow


def test_all_is_sorted_and_complete() -> None:
    exported = agentflow.__all__
    assert exported == sorted(exported)
    public = {name for name in vars(agentflow) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(agentflow, name)).__name__ == "module"}
    assert public - modules == set(exported) - {"__version__"}
