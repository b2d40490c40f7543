"""`tsops recordings serve`: a local, read-only web application to review recordings.

Imported only when `serve` runs (Starlette and uvicorn are not loaded by `tsops --help`).
"""
