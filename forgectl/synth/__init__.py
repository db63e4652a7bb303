"""Synthetic forgeries from pristine photos: the engine (:mod:`.engine`), processing histories
(:mod:`.histories`), regions and object cut-outs (:mod:`.regions`) and the sample they make
(:mod:`.sample`). Used by ``forgectl train``, ``forgectl synth`` and benchmark tables
(docs/SYNTH.md).
"""
