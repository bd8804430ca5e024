"""Answer generation: streaming LLM answers, their citations, and the fallbacks."""
