"""Finding faces and hands, and turning them into masks."""
