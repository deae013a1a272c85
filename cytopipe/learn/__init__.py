"""Learn a lab's own gating from expert-gated files and apply it to the rest of the archive.

- references: expert gating as training data (per-event labels on our own transform)
- model: a small neural-network ensemble of the expert's populations, saved as versioned JSON
- evaluate: leave-one-file-out accuracy over the reference files, before a lab trusts it
- agreement: the model's or an expert's populations against the template's gates
- approximate: the model's decision on a file as polygon gates (FlowJo, Gating-ML) to review
"""
