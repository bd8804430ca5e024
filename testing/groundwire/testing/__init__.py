"""Test support: the scripted OpenAI-compatible upstream and a private Redis process."""
