"""The thin RPC shim: HTTP JSON + WebSocket events and MessagePack-RPC over TCP.

What lives here: the reply envelope (``envelope``), operations and their dispatch with
parameter checks and the permission check (``dispatch``), the operation table shared by
both transports (``api``: the REST layout and RPC method names), the Starlette
application (``http``) with its generated OpenAPI document (``openapi``), bus events as
wire messages (``events``), the WebSocket event stream (``ws``) and the MessagePack-RPC
server (``rpc``).

The shim translates and never holds business logic: it decodes a request, checks the
caller's role against the auth service's permission table, calls one service method and
encodes the reply (or the error's result code) in the envelope the console clients expect.

May import: ``dios.codes``, ``dios.messages``, ``dios.uri``, ``dios.events`` and the service
packages (``dios.auth``, ``dios.study``, ``dios.catalog``, ``dios.resource``, ``dios.task``).
Never ``simulators``, ``drivers`` or ``processing``.
"""
