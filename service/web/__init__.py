"""HTTP: the app factory, routes, problem documents, request-body parsing, OpenAPI and the gunicorn config.

The only package of the service that imports Flask. It imports nothing here on purpose: gunicorn's master loads
`service.web.gunicorn_conf` before it forks, and must not load Flask, the model or scikit-learn with it.
"""
