"""Helpers the tests share: fake backends for pure logic, a loopback OpenAI-compatible server,
real servers (llama_cpp.server, the UI), a CLI runner, browser helpers. Test modules import
these, never each other."""
