"""Analysis: how good a model is and why.

``evaluate`` scores models and ``ensemble`` averages them; ``plots`` draws report figures;
``interpret`` looks inside a network (filters, feature maps, Grad-CAM) and
``interpret_figures`` draws what it finds; ``crossval`` and ``tune`` (+ ``tune_report``) run
many trainings to compare settings.
"""
