"""Where requests enter and leave: routes, the protocols clients speak (objects, Hub API, GCS JSON API), sends."""
