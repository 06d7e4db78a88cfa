"""The web console: server-rendered pages with a little JavaScript that call the JSON API from the
browser (no second copy of any recognition logic, no front-end build)."""
