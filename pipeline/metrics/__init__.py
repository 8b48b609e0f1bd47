"""What both stages measure and search with: expression and AU scores, the weight and bias
searches, the mean of members' probabilities.

Stage two scores its epochs and fits its heads' tables with these, stage three its members and
ensembles; both import this wing, neither imports the other.
"""
