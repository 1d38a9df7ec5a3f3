"""histomil.synth: the synthetic world, for tests, demos and experiments without public data.

Split by what it makes; nothing here is needed by real data, and nothing is imported eagerly:

- slides (image files): :mod:`histomil.synth.slides` writes pyramidal H&E-like TIFFs with
  lesion annotations (:class:`~histomil.synth.slides.SlideSynthConfig`); the polygon geometry
  of a slide is in :mod:`histomil.synth.slide_layout`, its pixels in
  :mod:`histomil.synth.slide_render`. numpy/PIL/shapely/tifffile only, no torch.
- bags (feature level, CAMELYON-like): :mod:`histomil.synth.bags` writes bag files, manifest and
  splits (:class:`~histomil.synth.bag_config.BagSynthConfig`, presets in
  :mod:`histomil.synth.bag_config`); the patch grid and blob lesions are in
  :mod:`histomil.synth.bag_grid`, one slide's features in :mod:`histomil.synth.bag_slide`.
- survival: :mod:`histomil.synth.survival` groups bag slides into cases with hazards and times.
"""
