"""De-identification: tabular k-anonymity (Mondrian) with l-diversity and t-closeness, utility and
re-identification risk measures. (Text PII detection and operators follow.)"""
