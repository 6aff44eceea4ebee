"""`podseg responder`: turns threat findings (Falco, Wiz, a generic JSON) into pod quarantine.

It exists so a detection tool can contain a workload without a human in the loop: it checks a
bearer token, parses the finding (pure parsers: `falco`, `wiz`, `generic`), decides against a
severity threshold and a rule allow-list (`findings`, on the scale of `severity`), and sets the
pod label `podseg.io/quarantine=true` through the API server (`patcher`); the node agents then
drop all of that pod's traffic. Pure modules: severity, findings, falco, wiz, generic.
"""
