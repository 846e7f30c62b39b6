"""Graph passes: autodiff and the optimization pipeline.

`cnndsl.passes.pipeline.optimize(graph, mode, level)` runs the passes registered in
cnndsl/passes/pipeline.py through the pass manager (cnndsl/passes/manager.py); each
pass is one module here, see docs/passes.md.
"""
