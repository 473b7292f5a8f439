"""The experiment layer: config -> data -> model -> fit -> evaluate -> export."""
