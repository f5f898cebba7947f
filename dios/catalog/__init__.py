"""The protocol catalog: patient types, body parts, procedures, views and their exposure
techniques (APR), for the human product ``DROS`` and the veterinary product ``VETDROS``.

What lives here
---------------
``model``
    Vocabulary (patient sizes, work stations, processing profiles, generator limits),
    the Renard tables the techniques are snapped to, and field validation.
``service``
    :class:`~dios.catalog.service.CatalogService`: read the shipped catalog merged with the
    user's overrides (enable/disable, sort, custom entries) and answer with exactly the
    reply shapes of the reference console API (``ProcedureList``, ``ViewList``, ``View``,
    ``AprReply``, ``AprDevice``, ``TechParam``).
``icons``
    Small generated PNG glyphs per view (body silhouette, highlighted region, projection).
``build_catalog``
    The maintenance tool that holds the technique charts and names as readable tables and
    writes the shipped ``data/*.json`` (``python -m dios.catalog.build_catalog``).
``data/``
    The shipped catalog, one JSON file per product.

Exposure technique basis
------------------------
Techniques follow typical digital-radiography technique charts for a medium adult
(human) or a medium dog / cat (veterinary), at 100 cm source-image distance with a
10:1 reciprocating grid for trunk work, 180 cm for chest and lateral cervical spine, and
100 cm table-top without grid for distal extremities. From that chart value the other
patient sizes are derived with per-region kV/mAs steps, and the other work stations with
the inverse-square law for their SID and a Bucky factor of 4 for grid to non-grid (with a
12 % kV reduction and the matching mAs increase for trunk work without grid, after the
15 % rule). mA, ms and mAs are placed on the Renard R10 series the generator steps on.

Imports: ``dios.codes``, ``dios.atomic`` (when present) and Pillow only; never the bus,
the devices or the HTTP shim.
"""
