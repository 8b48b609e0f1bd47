"""Stage three's library: metrics, ensembles and post-processing, reports, ABAW submissions."""
