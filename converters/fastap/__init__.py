"""The FastAP checkpoints as torchvision ResNets: families, conversion, model card, verify.

``families`` holds one ``FamilySpec`` per released model family (detection, trunk, weight
mapping); ``convert`` turns a network into a model and its card; ``model_file`` saves and
loads converted models; ``verify`` runs a converted model beside the numpy reference;
``synthetic`` writes checkpoints in the released layout for tests and the main job.
"""
