"""Configuration: YAML files with line-aware validation."""
