def main():
    print("eap-node")
