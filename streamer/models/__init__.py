"""Population models of customer behaviour, as pure numerical code (numpy + scipy).

* :mod:`streamer.models.btyd` — the buy-till-you-die models: BG/NBD for purchase counts and
  dropout, Gamma-Gamma for transaction value, and the discounted CLV that combines them.
* :mod:`streamer.models.cdnow` — the CDNOW sample and the calibration / holdout protocol of
  Fader, Hardie & Lee (2005), used to check the models against published numbers.
"""
