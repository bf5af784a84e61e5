"""(being written)"""
class Optimizer: pass
