"""What tests and benchmarks both build: tiny models from configs, a Redis server on a free port, a C2PA
chain, a small real archive, a config and one job through the real runner, measures of a picture."""
