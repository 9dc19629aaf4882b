print("seeker-leads-sim")
