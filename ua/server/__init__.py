"""ua-server: a local DNAnexus-compatible file platform (for dx, ua and tests).

Modules:
  cli.py      ``ua-server`` command line (serve + operator commands)
  app.py      aiohttp app factory ``make_app(Config)``: JSON API dispatch, signed storage
              PUT/GET endpoints, request log, fault injection; mounts ``ua.server.web`` via its
              ``setup(app, service)`` and any ``Config.setup_hooks`` before the API catch-all
  service.py  ``Service``: every permission-checked operation, taking a ``Caller`` (from
              ``Service.authenticate(token)``); shared by the API routes and the web console
  store.py    SQLite (WAL) metadata store and data-dir layout
  blobs.py    streaming part writer (incremental MD5, O_DIRECT, fsync)
  signing.py  HMAC-signed expiring URLs
  faults.py   ``--fault`` spec parsing and seeded decisions
  errors.py   DNAnexus error types and HTTP statuses
"""
