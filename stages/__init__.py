"""Pipeline stages: one module per stage, each keeping the contract in stages/base.py."""
