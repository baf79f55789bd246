"""The AWS backend: DynamoDB (leases, coordinator items, owner index) and Kinesis, through boto3."""
