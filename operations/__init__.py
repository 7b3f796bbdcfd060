"""What wires the apps together for a person at the keyboard: `manage.py serve` (the `make run` stack)
and the demo store. At the top of the layers: it may import every app, and no app imports it."""
