"""The REST API (Litestar): job definition CRUD, run and task reads, manual trigger.

`api.app.create_app(settings)` builds the app; `api.app.serve(settings, started, stop)`
runs it under uvicorn inside a bigger process.
"""
