"""groundwire's tools: eval and bench, clients of the server (the SDK and the contract)."""
